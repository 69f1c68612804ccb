"""One Deployment that breaks two mandatory rules of the platform's policy pack: an untagged image, no resources."""

import pulumi_kubernetes as k8s

labels = {"app": "unpinned"}
k8s.apps.v1.Deployment(
    "unpinned-web",
    metadata={"name": "unpinned-web", "namespace": "default"},
    spec={
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
    },
)
