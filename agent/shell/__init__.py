"""The shell: everything that touches the OS, the network or the clock."""
