# The fixtures every test in the tree shares: the core's and the plugins' own tests.
pytest_plugins = ["goalhub.testing"]
