"""fargate-scheduler: a pending pod becomes a microVM, a node of its own and a binding."""
