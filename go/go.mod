// SPDX-License-Identifier: Apache-2.0
module shmipc/shm

go 1.19
