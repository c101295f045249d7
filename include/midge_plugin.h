/*
 * midge_plugin.h: the stable C ABI of midge's plugins (version 1).
 *
 * Shaped like mosquitto's version 5 plugin interface, so a mosquitto plugin ports in an
 * afternoon: the plugin exports midge_plugin_version, midge_plugin_init and
 * midge_plugin_cleanup (and, optionally, midge_plugin_shard_init / midge_plugin_shard_cleanup);
 * in init it registers one callback per event it wants with midge_callback_register, a
 * function the broker exports (as mosquitto exports mosquitto_callback_register).
 *
 * Rules that keep the ABI stable:
 *  - every event struct and struct midge_client begins with a `size` field (sizeof the struct
 *    the broker built) and ends with reserved fields: new fields are added in place of
 *    reserved ones, so a plugin built against an older header keeps working; a plugin that
 *    reads a field added later checks `size` first (MIDGE_HAS_FIELD);
 *  - strings are pointer + length (struct midge_str), not NUL-terminated; a NULL pointer
 *    means "absent" (no user name, no certificate), a non-NULL pointer with length 0 means
 *    "empty";
 *  - everything an event struct points to is valid only during the callback: copy what you
 *    keep.
 *
 * Threads: midge is sharded (one event loop per core). Callbacks of one plugin run
 * concurrently on several shard threads with the same `userdata`; what the plugin shares
 * between shards it protects itself. Per-shard state needs no lock: midge_plugin_shard_init
 * makes it once per shard and every callback on that shard gets it as `shard_data`.
 * Callbacks must not block: slow work (network, slow hashes) answers MIDGE_LATER and
 * completes from another thread with midge_complete_basic_auth / midge_complete_extended_auth.
 *
 * Registration: callbacks are registered in midge_plugin_init. The set of events is fixed
 * when the shards are made (before midge_plugin_shard_init): registering later fails with
 * MIDGE_ERR_STATE. Unregistering works at any time (the callback is no longer called).
 */
#ifndef MIDGE_PLUGIN_H
#define MIDGE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI versions this header describes. midge_plugin_version picks one of those offered. */
#define MIDGE_PLUGIN_VERSION 1

/* True if the broker-built struct *p is large enough to hold FIELD (a field added later). */
#define MIDGE_HAS_FIELD(p, type, field) \
	((p)->size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* ---- Return codes ----------------------------------------------------------------------- */
enum midge_rc {
	MIDGE_SUCCESS = 0,       /* done; for auth and ACL: allowed */
	MIDGE_ALLOW = 0,         /* the same, where "allow" reads better */
	MIDGE_DENY = 1,          /* refused (auth, ACL) or dropped (message in) */
	MIDGE_DEFER = 2,         /* no opinion: ask the next plugin (MOSQ_ERR_PLUGIN_DEFER) */
	MIDGE_LATER = 3,         /* the answer comes later through the event's token */
	MIDGE_CONTINUE = 4,      /* extended auth: send AUTH 0x18 with data_out, wait for more */
	MIDGE_ERR_INVAL = 10,    /* a bad argument */
	MIDGE_ERR_NOMEM = 11,
	MIDGE_ERR_NOT_FOUND = 12,/* unregister: no such callback */
	MIDGE_ERR_EXISTS = 13,   /* register: this callback is already registered for the event */
	MIDGE_ERR_STATE = 14,    /* not allowed now (register after start-up, setter outside its event) */
	MIDGE_ERR_UNKNOWN = 15   /* init / shard_init: any failure */
};

/* ---- Events ------------------------------------------------------------------------------ */
enum midge_event {
	MIDGE_EVT_BASIC_AUTH = 1,     /* struct midge_evt_basic_auth; ALLOW, DENY, DEFER, LATER */
	MIDGE_EVT_EXTENDED_AUTH = 2,  /* struct midge_evt_extended_auth; SUCCESS, CONTINUE, DENY, DEFER, LATER */
	MIDGE_EVT_ACL_CHECK = 3,      /* struct midge_evt_acl_check; ALLOW, DENY, DEFER */
	MIDGE_EVT_MESSAGE = 4,        /* struct midge_evt_message (incoming); SUCCESS, DENY = drop */
	MIDGE_EVT_MESSAGE_OUT = 5,    /* struct midge_evt_message_out; return value ignored */
	MIDGE_EVT_SUBSCRIBE = 6,      /* struct midge_evt_subscribe; ignored */
	MIDGE_EVT_UNSUBSCRIBE = 7,    /* struct midge_evt_unsubscribe; ignored */
	MIDGE_EVT_CONNECT = 8,        /* struct midge_evt_connect; ignored */
	MIDGE_EVT_DISCONNECT = 9,     /* struct midge_evt_disconnect; ignored */
	MIDGE_EVT_TICK = 10,          /* struct midge_evt_tick; ignored */
	MIDGE_EVT_RELOAD = 11         /* struct midge_evt_reload; SUCCESS, or anything else = refuse */
};

/* Access asked by MIDGE_EVT_ACL_CHECK (mosquitto's MOSQ_ACL_* values). */
enum midge_access {
	MIDGE_ACL_READ = 1,      /* a message on `topic` is about to be delivered to the client */
	MIDGE_ACL_WRITE = 2,     /* the client publishes on `topic` */
	MIDGE_ACL_SUBSCRIBE = 4  /* the client subscribes with the filter `topic` */
};

/* Log levels for midge_log. */
enum midge_log_level {
	MIDGE_LOG_ERROR = 1,
	MIDGE_LOG_WARNING = 2,
	MIDGE_LOG_INFO = 3,
	MIDGE_LOG_DEBUG = 4
};

/* ---- Types ------------------------------------------------------------------------------- */

/* The plugin as the broker knows it: opaque, given to init, passed back to register. */
typedef struct midge_plugin_id midge_plugin_id_t;

/* A deferred auth answer (MIDGE_LATER): opaque, completed exactly once from any thread. */
typedef struct midge_token midge_token_t;

/* One `plugin_opt_KEY VALUE` line, `plugin_opt_` stripped (NUL-terminated). */
struct midge_opt {
	const char *key;
	const char *value;
};

/* Bytes borrowed from the broker for the duration of a call. ptr NULL: absent. */
struct midge_str {
	const char *ptr;
	size_t len;
};

/* Who the client is. */
struct midge_client {
	size_t size;
	struct midge_str client_id;
	struct midge_str username;       /* after authentication; absent before or without one */
	struct midge_str address;        /* the peer's IP address as text; absent if unknown */
	struct midge_str cert_identity;  /* the verified certificate's subject, if any */
	uint16_t port;                   /* the peer's port (0 if unknown) */
	uint16_t listener_port;          /* the port of the listener it came through */
	int protocol;                    /* 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0 */
	void *reserved[8];
};

typedef int (*midge_event_cb)(int event, void *event_data, void *userdata);

struct midge_evt_basic_auth {
	size_t size;
	void *shard_data;                     /* from midge_plugin_shard_init, or NULL */
	const struct midge_client *client;
	struct midge_str username;            /* CONNECT's user name; ptr NULL if none */
	struct midge_str password;            /* binary, not necessarily text; ptr NULL if none */
	midge_token_t *token;                 /* for MIDGE_LATER only; invalid after any other return */
	void *reserved[8];
};

struct midge_evt_extended_auth {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	struct midge_str method;              /* the Authentication Method */
	struct midge_str data_in;             /* this packet's Authentication Data; ptr NULL if none */
	int start;                            /* 1: CONNECT or AUTH 0x19; 0: AUTH 0x18 continue */
	int reauthenticate;                   /* 1: re-authentication of a connected client */
	const void *data_out;                 /* set by the plugin for SUCCESS / CONTINUE; copied */
	size_t data_out_len;                  /* by the broker when the callback returns */
	midge_token_t *token;                 /* for MIDGE_LATER only */
	void *reserved[8];
};

struct midge_evt_acl_check {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	struct midge_str topic;               /* a topic (READ, WRITE) or a filter (SUBSCRIBE) */
	int access;                           /* enum midge_access */
	void *reserved[8];
};

/* An incoming message (a client's PUBLISH, or a will / bridged message with client NULL),
 * after the ACL allowed it. Change it with midge_message_set_topic / _payload during the
 * callback; return MIDGE_DENY to drop it (the publisher's QoS flow still completes). */
struct midge_evt_message {
	size_t size;
	void *shard_data;
	const struct midge_client *client;   /* NULL: a will whose client is gone, or bridged */
	struct midge_str topic;               /* updated by the setters */
	struct midge_str payload;
	int qos;
	int retain;
	void *broker_private;                 /* the broker's; do not touch */
	void *reserved[8];
};

struct midge_evt_message_out {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	struct midge_str topic;
	struct midge_str payload;
	int qos;
	int retain;
	void *reserved[8];
};

struct midge_evt_subscribe {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	struct midge_str filter;
	int qos;
	void *reserved[8];
};

struct midge_evt_unsubscribe {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	struct midge_str filter;
	void *reserved[8];
};

struct midge_evt_connect {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	void *reserved[8];
};

struct midge_evt_disconnect {
	size_t size;
	void *shard_data;
	const struct midge_client *client;
	int graceful;                         /* 1: the client sent DISCONNECT (no will) */
	void *reserved[8];
};

struct midge_evt_tick {
	size_t size;
	void *shard_data;
	uint64_t now_ms;                      /* a monotonic clock, in milliseconds */
	void *reserved[8];
};

/* The configuration was re-read (SIGHUP). Called once, not per shard (shard_data NULL), on
 * the broker's configuration thread. A non-zero return keeps the old options in force. */
struct midge_evt_reload {
	size_t size;
	void *shard_data;
	const struct midge_opt *options;      /* the new options, valid until cleanup */
	int option_count;
	void *reserved[8];
};

/* ---- What the plugin exports ------------------------------------------------------------ */

/* Required. Returns the ABI version it will use, one of the `supported_count` offered
 * (today: {1}); any other answer stops start-up. */
int midge_plugin_version(int supported_count, const int *supported_versions);

/* Required. Called once at start-up with the plugin's options (valid until cleanup).
 * Set *userdata for the callbacks; register callbacks with midge_callback_register.
 * A non-zero return stops start-up, naming the plugin's file. */
int midge_plugin_init(midge_plugin_id_t *id, void **userdata, struct midge_opt *options, int option_count);

/* Required. Called once at shutdown. */
int midge_plugin_cleanup(void *userdata, struct midge_opt *options, int option_count);

/* Optional. Per-shard state (FlashMQ's thread data), made on the starting thread once per
 * shard before the shard runs; given to every callback on that shard as `shard_data`.
 * A non-zero return is logged and leaves shard_data NULL. */
int midge_plugin_shard_init(midge_plugin_id_t *id, int shard, int shards, void **shard_data);

/* Optional. Frees what midge_plugin_shard_init made, when the shard stops. */
int midge_plugin_shard_cleanup(midge_plugin_id_t *id, int shard, void *shard_data);

/* ---- What the broker exports (resolved when midge loads the plugin) ---------------------- */

/* Calls `callback(event, event_data, userdata)` on each `event`. `event_data` is reserved for
 * filters of later versions: pass NULL. `userdata` is handed back to the callback. */
int midge_callback_register(midge_plugin_id_t *id, int event, midge_event_cb callback, const void *event_data, void *userdata);
int midge_callback_unregister(midge_plugin_id_t *id, int event, midge_event_cb callback, const void *event_data);

/* During MIDGE_EVT_MESSAGE only: replace the topic (valid UTF-8, no wildcards, not empty) or
 * the payload. The bytes are copied; evt->topic / evt->payload are updated. */
int midge_message_set_topic(struct midge_evt_message *evt, const char *topic, size_t len);
int midge_message_set_payload(struct midge_evt_message *evt, const void *payload, size_t len);

/* Answer a MIDGE_LATER, from any thread, exactly once. result: MIDGE_ALLOW or MIDGE_DENY
 * (anything else denies). For extended auth: MIDGE_SUCCESS or MIDGE_CONTINUE with data
 * (copied), or MIDGE_DENY. */
int midge_complete_basic_auth(midge_token_t *token, int result);
int midge_complete_extended_auth(midge_token_t *token, int result, const void *data, size_t len);

/* Logs `message` (NUL-terminated) under the plugin's name. Not variadic: format it first. */
void midge_log(midge_plugin_id_t *id, int level, const char *message);

#ifdef __cplusplus
}
#endif

#endif /* MIDGE_PLUGIN_H */
