"""The project's CrossGuard policy pack: every policy is mandatory unless its config says otherwise.

`pulumi preview --policy-pack policy` (and up) runs it on every resource of the stack. A user makes
one policy advisory, or gives it config, with `--policy-pack-config <file>` (policy/README.md).
"""

import exposure
import pods
import stack
from pulumi_policy import EnforcementLevel, PolicyPack

PACK_NAME = "consul-microservices"
POLICIES = [*pods.POLICIES, *exposure.POLICIES, *stack.POLICIES]
# The one image the program runs by a version tag: the chart's own Consul image, in the login Job
# when the stack mirrors none (consulImage pins a mirror by digest). The chart runs it so too.
CHART_CONSUL_IMAGE = "hashicorp/consul:1.22.3"
# Each entry names its level: the engine applies an initial config's level as the pack sends it, and
# one sent without is proto's zero value, advisory (pulumi's ReconcilePolicyPackConfig).
INITIAL_CONFIG = {
    "images-pinned": {
        "enforcementLevel": EnforcementLevel.MANDATORY,
        "allowedTags": [CHART_CONSUL_IMAGE],
    }
}

if __name__ == "__main__":
    PolicyPack(
        name=PACK_NAME,
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=POLICIES,
        initial_config=INITIAL_CONFIG,
    )
