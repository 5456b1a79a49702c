"""Pure decisions of the model lifecycle: no I/O, no clients, only data in and data out."""
