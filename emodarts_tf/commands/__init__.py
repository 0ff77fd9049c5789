"""Command implementations behind the thin scripts in cli/ (each exposes main(argv))."""
