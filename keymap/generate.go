package keymap

//go:generate go run ./internal/gensyms
