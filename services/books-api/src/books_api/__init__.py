"""books-api: the seed's Flask books API, plus a greeting from ExampleService found in Consul."""
