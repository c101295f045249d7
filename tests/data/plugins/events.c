/*
 * A C plugin that watches every event midge's C ABI has, for the unit tests of the adapter
 * (src/plugin/cabi/tests.rs): it counts calls (events_seen), keeps per-shard data, changes
 * and drops messages, and runs an enhanced-auth exchange, one method of it deferred.
 *   gcc -shared -fPIC -I include -o events.so tests/data/plugins/events.c -lpthread
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "midge_plugin.h"

static int seen[16];
static int shard_data_ok;

/* How many times `event` was called (read by the tests through dlsym). */
int events_seen(int event)
{
	return __atomic_load_n(&seen[event & 15], __ATOMIC_SEQ_CST);
}

int events_shard_data_ok(void)
{
	return __atomic_load_n(&shard_data_ok, __ATOMIC_SEQ_CST);
}

static int str_eq(struct midge_str s, const char *c)
{
	return s.ptr != NULL && strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0;
}

/* Every event struct starts with size, shard_data. */
struct head {
	size_t size;
	void *shard_data;
};

static void *answer_later(void *token)
{
	midge_complete_extended_auth(token, MIDGE_SUCCESS, "late", 4);
	return NULL;
}

static int on_event(int event, void *event_data, void *userdata)
{
	struct head *h = event_data;
	(void)userdata;
	__atomic_fetch_add(&seen[event & 15], 1, __ATOMIC_SEQ_CST);
	if (h->shard_data != NULL && *(int *)h->shard_data == 4242) {
		__atomic_fetch_add(&shard_data_ok, 1, __ATOMIC_SEQ_CST);
	}
	if (event == MIDGE_EVT_MESSAGE) {
		struct midge_evt_message *m = event_data;
		if (str_eq(m->topic, "drop")) {
			return MIDGE_DENY;
		}
		if (str_eq(m->topic, "rename")) {
			if (midge_message_set_topic(m, "bad/#", 5) != MIDGE_ERR_INVAL) {
				return MIDGE_DENY;
			}
			midge_message_set_topic(m, "renamed", 7);
			midge_message_set_payload(m, "P", 1);
			if (!str_eq(m->topic, "renamed") || !str_eq(m->payload, "P")) {
				return MIDGE_DENY;
			}
		}
		return MIDGE_SUCCESS;
	}
	if (event == MIDGE_EVT_EXTENDED_AUTH) {
		struct midge_evt_extended_auth *a = event_data;
		pthread_t thread;
		if (str_eq(a->method, "LATER")) {
			if (pthread_create(&thread, NULL, answer_later, a->token) != 0) {
				return MIDGE_DENY;
			}
			pthread_detach(thread);
			return MIDGE_LATER;
		}
		if (!str_eq(a->method, "ECHO")) {
			return MIDGE_DEFER;
		}
		if (a->start) {
			a->data_out = "challenge";
			a->data_out_len = 9;
			return MIDGE_CONTINUE;
		}
		if (str_eq(a->data_in, "ok")) {
			a->data_out = "welcome";
			a->data_out_len = 7;
			return MIDGE_SUCCESS;
		}
		return MIDGE_DENY;
	}
	return MIDGE_SUCCESS;
}

int midge_plugin_version(int supported_count, const int *supported_versions)
{
	(void)supported_count;
	(void)supported_versions;
	return MIDGE_PLUGIN_VERSION;
}

int midge_plugin_init(midge_plugin_id_t *id, void **userdata, struct midge_opt *options, int option_count)
{
	int event;
	(void)options;
	(void)option_count;
	*userdata = NULL;
	for (event = MIDGE_EVT_EXTENDED_AUTH; event <= MIDGE_EVT_TICK; event++) {
		if (event == MIDGE_EVT_ACL_CHECK) {
			continue;
		}
		if (midge_callback_register(id, event, on_event, NULL, NULL) != MIDGE_SUCCESS) {
			return MIDGE_ERR_UNKNOWN;
		}
	}
	if (midge_callback_register(id, MIDGE_EVT_TICK, on_event, NULL, NULL) != MIDGE_ERR_EXISTS) {
		return MIDGE_ERR_UNKNOWN;
	}
	return MIDGE_SUCCESS;
}

int midge_plugin_cleanup(void *userdata, struct midge_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return MIDGE_SUCCESS;
}

int midge_plugin_shard_init(midge_plugin_id_t *id, int shard, int shards, void **shard_data)
{
	int *data = malloc(sizeof(int));
	(void)shard;
	(void)shards;
	if (data == NULL) {
		return MIDGE_ERR_NOMEM;
	}
	*data = 4242;
	*shard_data = data;
	/* Too late to register: the events are fixed. */
	if (midge_callback_register(id, MIDGE_EVT_ACL_CHECK, on_event, NULL, NULL) != MIDGE_ERR_STATE) {
		*data = 0;
	}
	return MIDGE_SUCCESS;
}

int midge_plugin_shard_cleanup(midge_plugin_id_t *id, int shard, void *shard_data)
{
	(void)id;
	(void)shard;
	free(shard_data);
	return MIDGE_SUCCESS;
}
