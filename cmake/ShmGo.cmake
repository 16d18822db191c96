# SPDX-License-Identifier: Apache-2.0
# Building the Go programs of this repository (go/) from CMake, shared by the cross-language tests and
# shm-bench. shm_go_setup() sets, in the caller's scope: go_dir (the Go module), go_env (the environment every
# `go` command runs with: cache and module path inside the current binary directory, no network, no cgo) and
# go_sources (what a Go build depends on). GOWORK=off: a go.work above the tree (go/README.md suggests one to
# users of the module) must not change what the build compiles.
macro(shm_go_setup)
  set(go_dir ${PROJECT_SOURCE_DIR}/go)
  set(go_env
    GOCACHE=${CMAKE_CURRENT_BINARY_DIR}/go-cache
    GOPATH=${CMAKE_CURRENT_BINARY_DIR}/go-path
    GOENV=off GOWORK=off GOPROXY=off GOFLAGS=-buildvcs=false GO111MODULE=on CGO_ENABLED=0)
  file(GLOB_RECURSE go_sources CONFIGURE_DEPENDS ${go_dir}/*.go ${go_dir}/go.mod)
endmacro()
