"""ExampleService: the seed's gRPC greeter, with health, reflection, Consul, graceful stop."""
