module shmipc.dev/shm

go 1.19
