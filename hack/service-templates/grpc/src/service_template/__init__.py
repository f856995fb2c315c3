"""service-template: a gRPC service of the consul-microservices catalog."""
