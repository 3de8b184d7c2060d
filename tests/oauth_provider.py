"""The loopback OAuth provider lives in tools/oauth_provider.py (`tiris dev` runs it too); tests import it from
either place."""

from tools.oauth_provider import (GOOGLE_CLIENT, REDIRECT_URI, WECHAT_ERRMSG, WECHAT_IN_APP,  # noqa: F401
                                  WECHAT_WEB_APP, Account, Grant, LoopbackProvider, approve)
