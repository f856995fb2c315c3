module consul-microservices/hack/pause

go 1.22
