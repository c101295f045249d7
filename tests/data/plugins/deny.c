/*
 * A small midge plugin in C, compiled by the tests with
 *   gcc -shared -fPIC -I include -o deny.so tests/data/plugins/deny.c -lpthread
 * to prove include/midge_plugin.h is usable from C.
 *
 * Options:
 *   plugin_opt_deny_topic T   publishing to, subscribing to and receiving T are denied
 *   plugin_opt_later_user U   CONNECT with user name U is answered MIDGE_LATER, then from
 *                             another thread: allowed if the password is "good"
 *   plugin_opt_fail_init 1    midge_plugin_init fails (start-up must stop)
 * At a reload it logs the new deny_topic, and refuses new options holding refuse_reload.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge_plugin.h"

struct deny {
	midge_plugin_id_t *id;
	char *deny_topic;
	char *later_user;
};

struct pending {
	midge_token_t *token;
	int good;
};

static int str_eq(struct midge_str s, const char *c)
{
	return s.ptr != NULL && c != NULL && strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0;
}

static int on_acl(int event, void *event_data, void *userdata)
{
	struct midge_evt_acl_check *evt = event_data;
	struct deny *d = userdata;
	(void)event;
	if (str_eq(evt->topic, d->deny_topic)) {
		return MIDGE_DENY;
	}
	return MIDGE_DEFER;
}

static void *answer_later(void *arg)
{
	struct pending *p = arg;
	midge_complete_basic_auth(p->token, p->good ? MIDGE_ALLOW : MIDGE_DENY);
	free(p);
	return NULL;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct midge_evt_basic_auth *evt = event_data;
	struct deny *d = userdata;
	struct pending *p;
	pthread_t thread;
	(void)event;
	if (!str_eq(evt->username, d->later_user)) {
		return MIDGE_DEFER;
	}
	p = malloc(sizeof(*p));
	if (p == NULL) {
		return MIDGE_DENY;
	}
	p->token = evt->token;
	p->good = str_eq(evt->password, "good");
	if (pthread_create(&thread, NULL, answer_later, p) != 0) {
		free(p);
		return MIDGE_DENY;
	}
	pthread_detach(thread);
	return MIDGE_LATER;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct midge_evt_reload *evt = event_data;
	struct deny *d = userdata;
	const char *topic = "(none)";
	char line[200];
	int i;
	(void)event;
	for (i = 0; i < evt->option_count; i++) {
		if (strcmp(evt->options[i].key, "refuse_reload") == 0) {
			return MIDGE_DENY;
		}
		if (strcmp(evt->options[i].key, "deny_topic") == 0) {
			topic = evt->options[i].value;
		}
	}
	snprintf(line, sizeof(line), "deny.c: reloaded, deny_topic %s", topic);
	midge_log(d->id, MIDGE_LOG_INFO, line);
	return MIDGE_SUCCESS;
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
	struct deny *d;
	int i;
	for (i = 0; i < option_count; i++) {
		if (strcmp(options[i].key, "fail_init") == 0) {
			midge_log(id, MIDGE_LOG_ERROR, "deny.c: failing init as asked");
			return MIDGE_ERR_UNKNOWN;
		}
	}
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		return MIDGE_ERR_NOMEM;
	}
	d->id = id;
	for (i = 0; i < option_count; i++) {
		if (strcmp(options[i].key, "deny_topic") == 0) {
			d->deny_topic = strdup(options[i].value);
		} else if (strcmp(options[i].key, "later_user") == 0) {
			d->later_user = strdup(options[i].value);
		}
	}
	*userdata = d;
	if (d->deny_topic != NULL) {
		midge_callback_register(id, MIDGE_EVT_ACL_CHECK, on_acl, NULL, d);
	}
	if (d->later_user != NULL) {
		midge_callback_register(id, MIDGE_EVT_BASIC_AUTH, on_basic_auth, NULL, d);
	}
	midge_callback_register(id, MIDGE_EVT_RELOAD, on_reload, NULL, d);
	midge_log(id, MIDGE_LOG_INFO, "deny.c: loaded");
	return MIDGE_SUCCESS;
}

int midge_plugin_cleanup(void *userdata, struct midge_opt *options, int option_count)
{
	struct deny *d = userdata;
	(void)options;
	(void)option_count;
	if (d != NULL) {
		midge_log(d->id, MIDGE_LOG_INFO, "deny.c: cleanup");
		free(d->deny_topic);
		free(d->later_user);
		free(d);
	}
	return MIDGE_SUCCESS;
}
