"""`astra api`: the HTTP and WebSocket ingestion gateway and the REST read API
(docs/api.md). FastAPI on uvicorn; Kafka, Postgres and the warehouse through resources."""
