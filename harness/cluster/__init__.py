"""Ray plumbing shared by every backend that runs on a cluster (`verify --all --backend ray`,
`sweep --backend ray`): `connection` (join a cluster or start a private one on 127.0.0.1) and
`workers` (the worker plan, the thread rule, starting a checked pool of actors). A foundation:
it imports no harness layer, and `ray` only inside functions."""
