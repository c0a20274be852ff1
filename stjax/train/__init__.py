"""The train room: mesh and shardings, train state, optimiser, the generic loop."""
