"""The local control plane: real etcd, kube-apiserver, kube-controller-manager and
kube-scheduler on loopback, for the demo (``vk-fargate dev``) and the test suite.

Modules: ``binaries`` finds or builds the programs, ``pki`` makes the throw-away
certificates, ``components`` turns a layout into command lines, ``processes`` starts,
watches and stops them, ``cluster`` puts it together, ``state`` remembers a cluster
that ``dev up`` left running. ``coredns`` builds CoreDNS, ``images`` and ``registry``
make and serve the local images, ``clusterdns`` deploys CoreDNS on Fargate.
"""
