"""`pig serve`: the index, the query encoder and the rerank head loaded once, answering over HTTP.

    searcher.py      the query path without HTTP (encode, exact scan, rerank), what `pig rank` runs
    catalog.py       the indexed videos' own files and ITS choices, by id
    media.py         frames as the model saw them (JPEG) and ITS patch boxes, for the page
    text_encoder.py  the query encoder, loaded once
    app.py           the FastAPI app: create_app(INDEX, ...) -> app (JSON API, video files, the page)
    static/          the search page

FastAPI and uvicorn are an optional extra: pip install 'pigcli[serve]'.
"""
