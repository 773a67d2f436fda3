pytest_plugins = ["awsfixtures", "projects", "bundlefixtures"]
