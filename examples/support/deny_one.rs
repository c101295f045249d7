//! The trivial ACL plugin the plugin measurements share (`route_instructions`,
//! `cabi_instructions`, `plugin_broker`): it refuses reading `forbidden` and passes on
//! everything else, so every delivery asks it once and it costs next to nothing itself. The
//! same rule in C is tests/data/plugins/acl_trivial.c.

use midge::auth::Access;
use midge::plugin::{ClientInfo, Decision, Events, Plugin, PluginOptions, ShardPlugin};

pub struct DenyOne;

impl Plugin for DenyOne {
    fn name(&self) -> &str {
        "deny-one"
    }
    fn configure(&self, _: &PluginOptions) -> Result<(), String> {
        Ok(())
    }
    fn shard(&self, _: usize, _: usize) -> Box<dyn ShardPlugin> {
        Box::new(DenyOne)
    }
}

impl ShardPlugin for DenyOne {
    fn events(&self) -> Events {
        Events::ACL_CHECK
    }
    fn acl_check(&mut self, _: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if access == Access::Read && topic == "forbidden" {
            Decision::Deny
        } else {
            Decision::Pass
        }
    }
}
