"""What the commands run, built from the layers below: train/transfer/eval (pipeline), sweeps,
budget curves, the demo, named suites, run manifests, plans and scorecards."""
