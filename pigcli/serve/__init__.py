"""`pig serve`: the index, the query encoder and the rerank head loaded once, answering over HTTP.

    searcher.py      the query path without HTTP (encode, exact scan, rerank), what `pig rank` runs;
                     the query encoder is pigcli.model.text_encoder's, the text side alone
    catalog.py       the indexed videos' own files, frames and ITS choices, by id (through pigcli.query.media),
                     opened only inside the folders the index recorded
    thumbs.py        strips of the frames the model saw, as JPEG
    app.py           the FastAPI app: create_app(INDEX, ...) -> app (JSON API, video files, the page)
    guard.py         the Host allow-list and the security headers of every response
    static/          the search page

FastAPI and uvicorn are an optional extra: pip install 'pigcli[serve]'.
"""
