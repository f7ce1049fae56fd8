"""The query side: ranking an index (exact or ANN), scoring, EERCF rerank and its tuning, evaluation,
cost per query, and what shows the results (rankings, HTML, thumbnails, explain images)."""
