"""shax_client: trace NumPy-style Python locally, differentiate it on a shax server.

    import shax_core.numpy as snp
    from shax_client import Client

    def f(x, y):
        z = x + y
        return snp.sin(z) * snp.cos(z)

    with Client("http://127.0.0.1:8000") as client:
        print(client.grad(f, argnums=(0, 1))(0.5, -0.75))

``Client`` and ``AsyncClient`` share one I/O-free base (``_base.BaseClient``): request building,
tensor encoding (JSON below ``binary_threshold`` bytes, the binary extension above), error
mapping (``shax_client.errors``) and the retry policy.
"""

from shax_client._async import AsyncClient
from shax_client._base import (
    DEFAULT_BINARY_THRESHOLD,
    BaseClient,
    MinimizeResult,
    RetryPolicy,
    Step,
)
from shax_client._remote import AsyncRemoteFunction, RemoteFunction
from shax_client._sync import Client
from shax_client.errors import (
    AuthError,
    ConnectionFailed,
    InvalidRequest,
    InvalidTensor,
    LimitExceeded,
    NotFound,
    ProgramError,
    ServerError,
    ShaxClientError,
    Timeout,
    Unavailable,
)
from shax_core import __version__  # one distribution, one version

__all__ = [
    "__version__",
    "DEFAULT_BINARY_THRESHOLD",
    "AsyncClient",
    "AsyncRemoteFunction",
    "AuthError",
    "BaseClient",
    "Client",
    "ConnectionFailed",
    "InvalidRequest",
    "InvalidTensor",
    "LimitExceeded",
    "MinimizeResult",
    "NotFound",
    "ProgramError",
    "RemoteFunction",
    "RetryPolicy",
    "ServerError",
    "ShaxClientError",
    "Step",
    "Timeout",
    "Unavailable",
]
