"""Domain: the use cases (who may do what), the profile's fields and their checks, and each
call's time budget. Knows neither gRPC nor psycopg."""
