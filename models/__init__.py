"""Reference architectures (installed as ``dcn_deploy.models``): the demo network and the paper's models."""
