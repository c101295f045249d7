/*
 * The cheapest ACL plugin: refuses reading "forbidden", defers everything else (the rule of
 * examples/route_instructions.rs' Rust `acl-plugin`). For measuring what a C ACL callback
 * costs (examples/cabi_instructions.rs, examples/route_instructions.rs):
 *   gcc -O2 -shared -fPIC -I include -o target/acl_trivial.so tests/data/plugins/acl_trivial.c
 */
#include <string.h>

#include "midge_plugin.h"

static int on_acl(int event, void *event_data, void *userdata)
{
	const struct midge_evt_acl_check *evt = event_data;
	(void)event;
	(void)userdata;
	if (evt->access == MIDGE_ACL_READ && evt->topic.len == 9 && memcmp(evt->topic.ptr, "forbidden", 9) == 0) {
		return MIDGE_DENY;
	}
	return MIDGE_DEFER;
}

int midge_plugin_version(int supported_count, const int *supported_versions)
{
	int i;
	for (i = 0; i < supported_count; i++) {
		if (supported_versions[i] == MIDGE_PLUGIN_VERSION) {
			return MIDGE_PLUGIN_VERSION;
		}
	}
	return -1;
}

int midge_plugin_init(midge_plugin_id_t *id, void **userdata, struct midge_opt *options, int option_count)
{
	(void)options;
	(void)option_count;
	*userdata = NULL;
	return midge_callback_register(id, MIDGE_EVT_ACL_CHECK, on_acl, NULL, NULL);
}

int midge_plugin_cleanup(void *userdata, struct midge_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return MIDGE_SUCCESS;
}
