module shmipc/shm

go 1.19
