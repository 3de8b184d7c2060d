from flask import Response

from tiris import metrics


def get_metrics():
    body, content_type = metrics.exposition()
    return Response(body, status=200, content_type=content_type)
