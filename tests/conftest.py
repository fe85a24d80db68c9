pytest_plugins = ["server.pytest_plugin"]
