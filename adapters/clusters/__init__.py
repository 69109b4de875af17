"""Dask cluster connectors, one module per cluster ``type``.

``local`` (owned by the daemon), ``address`` (existing scheduler, optional
mutual TLS); and, each needing an optional extra imported only inside its
connector: ``gateway`` (dask-gateway), ``kubernetes`` (dask-kubernetes),
``coiled``, ``cloudprovider`` (dask-cloudprovider EC2/GCP, owned).
"""
