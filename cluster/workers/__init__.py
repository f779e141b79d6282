"""The GPU side of the cluster: engines that turn task arguments into result files, and the model store."""
