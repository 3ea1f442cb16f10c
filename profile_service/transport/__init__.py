"""Transport: the gRPC server and the path of a call into it, from the wire to a use case (the
server and its options, the interceptor chain, the servicer that maps messages to calls)."""
