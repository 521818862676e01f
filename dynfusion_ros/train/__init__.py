"""Training from bags: datasets, the branch network, and (later) the gate."""
