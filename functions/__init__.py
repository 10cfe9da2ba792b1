"""Modal entrypoints: the deployed app (app.py, generator.py, web.py) and the weights filler."""
