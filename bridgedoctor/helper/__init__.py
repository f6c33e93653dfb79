"""bridgedoctor-helper: the small root service that answers the maubot plugin over a Unix socket.

The plugin runs in maubot's container as the unprivileged `matrix` user and cannot read bridge
configs or crypto stores; the helper can, and answers only the three read-only operations of
bridgedoctor.protocol. See docs/helper.md for the security model.
"""
