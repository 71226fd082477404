"""Process simulators, tag catalogue and the simulated PLC. Kept empty: importing app.plant.models never loads gymnasium."""
