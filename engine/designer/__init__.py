"""The flow designer: turning flows into graphs and back, and trying them out (dry runs)."""
