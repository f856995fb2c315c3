-- wrk: every request adds a book (bench/services.py's POST throughput).
wrk.method = "POST"
wrk.body = '{"title": "A benchmark", "author": "wrk"}'
wrk.headers["Content-Type"] = "application/json"
