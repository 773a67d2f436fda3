pytest_plugins = ["awsfixtures", "projects"]
