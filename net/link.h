/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The link between harvest-pool and harvesterd: framing, limits, signatures,
 * replay detection, identities, and a worker client.
 *
 * The message types are protobuf-c's, generated from net/link.proto into
 * $(BUILD)/net/link.pb-c.h; net/WIRE.md documents the format. Nothing here
 * prints: every function returns 0 (or a count) or -errno, and writes its
 * ret_* parameters only on success.
 *
 * Errors shared by the decoder and the verifiers:
 *   -EMSGSIZE        a size or count limit below was broken
 *   -EBADMSG         did not parse, a required field is missing, bad UTF-8
 *   -EPROTONOSUPPORT Envelope.version is not LINK_VERSION
 *   -EKEYREJECTED    a signature does not verify (forged, truncated, other key)
 *   -ESTALE          a replayed or reordered sequence number
 *   -ENOTCONN        a MACed envelope for a session the receiver does not hold
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/link.pb-c.h"

#define LINK_VERSION              2U

/* Limits, enforced by link_decode() and the verifiers on every message. */
#define LINK_MSG_MAX_BYTES        (1024U * 1024U)   /* a whole Envelope */
#define LINK_NONCE_BYTES          16U
#define LINK_KEY_BYTES            32U               /* ed25519 public key */
#define LINK_SECRET_BYTES         64U               /* ed25519 secret key */
#define LINK_SIG_BYTES            64U
#define LINK_MAC_BYTES            32U               /* HMAC-SHA-512-256 */
#define LINK_KX_BYTES             32U               /* X25519 public or secret key */
#define LINK_SESSION_ID_BYTES     16U
#define LINK_HASH_BYTES           32U               /* SHA-256 */
#define LINK_ID_MAX               64U    /* task and worker ids: [A-Za-z0-9._:-] */
#define LINK_STR_MAX              256U   /* arch, agent, names, reasons, messages */
#define LINK_ARGV_MAX             64U    /* entries of TaskSpec.argv */
#define LINK_ARG_MAX_BYTES        4096U  /* one argv entry */
#define LINK_FILES_MAX            16U    /* inputs of a task, outputs of a result */
#define LINK_FILE_MAX_BYTES       (256U * 1024U)
#define LINK_DEVICES_MAX          16U
#define LINK_DIMS_MAX             3U     /* TaskSpec.global_size, TaskSpec.local_size */
#define LINK_WORK_ITEMS_MAX       (1ULL << 40)  /* product of TaskSpec.global_size */
#define LINK_KERNEL_ARGS_MAX      32U    /* TaskSpec.args */
#define LINK_SCALAR_MAX_BYTES     16U    /* KernelArg.value of an ARG_SCALAR */
#define LINK_LOCAL_MAX_BYTES      (1024U * 1024U)  /* KernelArg.bytes of an ARG_LOCAL */
#define LINK_TASKS_MAX            16U    /* Fetch.max_tasks, Work.tasks */
#define LINK_RENEW_MAX            64U    /* Renew.task_ids, RenewReply.leases */
#define LINK_RESULTS_MAX          16U    /* results in one Result: its own and Result.more */

/* A key pair: ours, or (sk all zero) only a peer's public key. */
typedef struct LinkIdentity {
        uint8_t pk[LINK_KEY_BYTES];
        uint8_t sk[LINK_SECRET_BYTES];
        uint64_t seq;                   /* last sequence number sent */
} LinkIdentity;

/* A decoded, size-checked Envelope whose signature verified against
 * env->sender (or whose MAC verified under its session's key), and its
 * decoded, size-checked Body. Between link_decode_frame() and
 * link_msg_open() only env is set: nothing in it is authenticated yet. */
typedef struct LinkMsg {
        Hlink__Envelope *env;
        Hlink__Body *body;
} LinkMsg;

/* A session between one worker and the pool, agreed in hello/welcome
 * (X25519, libsodium's crypto_kx): every later envelope in either direction
 * carries an HMAC under it instead of an ed25519 signature. It lives only in
 * the two processes' memory; a pool restart forgets it and the worker says
 * hello again. */
typedef struct LinkSession {
        uint8_t id[LINK_SESSION_ID_BYTES];
        uint8_t tx[LINK_KX_BYTES];      /* MAC key for what we send */
        uint8_t rx[LINK_KX_BYTES];      /* MAC key for what we receive */
        uint64_t rx_seq;                /* last sequence number received in it */
} LinkSession;

/* Initialise libsodium once; safe to call from any thread, any number of
 * times. Every other function calls it. */
int link_init(void);

/* Load the ed25519 identity kept in PATH (64 raw bytes, mode 0600), or, with
 * CREATE and no such file, make a new one there (O_EXCL, 0600, fsync'd).
 * -EPERM when the file is readable by group or others, -EBADMSG when it is
 * not a key. */
int link_identity_load(const char *path, bool create, LinkIdentity *ret);

/* The same for a worker: STATE_DIR/link-identity.key, created on first use. */
int link_identity_worker(const char *state_dir, LinkIdentity *ret);

/* Base64 (RFC 4648, padded) of a public key into BUF (at least 45 bytes). */
int link_key_to_base64(const uint8_t pk[LINK_KEY_BYTES], char *buf, size_t size);
/* Parse a public key as link_key_to_base64() writes it ([Pool] Key=). */
int link_key_from_base64(const char *s, uint8_t ret_pk[LINK_KEY_BYTES]);

/* Frame BODY from ID: next sequence number max(ID->seq + 1, NOW_USEC), a fresh
 * nonce, REPLY_TO (a request's nonce, or NULL), signed with ID->sk. The
 * buffer is malloc'd. RET_NONCE (optional) gets the nonce used. -EMSGSIZE if
 * the result would exceed LINK_MSG_MAX_BYTES. */
int link_encode(LinkIdentity *id, const Hlink__Body *body, const uint8_t *reply_to,
                uint64_t now_usec, uint8_t *ret_nonce, void **ret_buf, size_t *ret_len);

/* The same in a session: the envelope carries SESSION's id and an HMAC
 * under SESSION->tx instead of a signature. */
int link_encode_session(LinkIdentity *id, const LinkSession *session, const Hlink__Body *body,
                        const uint8_t *reply_to, uint64_t now_usec, uint8_t *ret_nonce, void **ret_buf,
                        size_t *ret_len);

/* Decode and check one received message: the whole-message limit, the
 * envelope fields, its signature against its own sender key, the body and
 * every field limit of its message type. Task specs and result bodies inside
 * are only checked for size here: see link_task_verify() and
 * link_result_verify(). The caller decides whether env->sender is a key it
 * trusts, and checks env->seq with link_replay_check(). A MACed envelope
 * is -ENOTCONN here: it needs link_decode_frame() and link_msg_open(). */
int link_decode(const void *buf, size_t len, LinkMsg **ret);

/* link_decode() in two steps, for a receiver that holds sessions: first
 * the frame alone (limits, version, field lengths; nothing authenticated,
 * body not parsed), so the caller can find the session named by
 * env->session for env->sender; then link_msg_open() authenticates it (a
 * signed one against env->sender, a MACed one under SESSION->rx: -ENOTCONN
 * when SESSION is NULL or has another id, -EKEYREJECTED when the MAC is
 * wrong) and only then parses and checks the body. */
int link_decode_frame(const void *buf, size_t len, LinkMsg **ret);
int link_msg_open(LinkMsg *m, const LinkSession *session);
/* Whether M came with an ed25519 signature (not a session MAC). */
bool link_msg_signed(const LinkMsg *m);
void link_msg_free(LinkMsg *m);

/* Key exchange. The worker makes a fresh X25519 pair for each hello and
 * puts the public half in Hello.kx_public; the pool answers with its own
 * fresh half and a random session id in the (signed) Welcome. */
int link_kx_keypair(uint8_t ret_pk[LINK_KX_BYTES], uint8_t ret_sk[LINK_KX_BYTES]);
/* Pool side: a session for the worker whose hello carried WORKER_KX_PK;
 * RET_KX_PK goes into Welcome.kx_public and RET->id into Welcome.session. */
int link_session_server(const uint8_t worker_kx_pk[LINK_KX_BYTES], LinkSession *ret,
                        uint8_t ret_kx_pk[LINK_KX_BYTES]);
/* Worker side: the session from its hello's key pair and the Welcome. */
int link_session_client(const uint8_t kx_pk[LINK_KX_BYTES], const uint8_t kx_sk[LINK_KX_BYTES],
                        const Hlink__Welcome *welcome, LinkSession *ret);

/* Replay guard: accept SEQ only if above *LAST_SEQ, then remember it. */
int link_replay_check(uint64_t *last_seq, uint64_t seq);

/* Pool side: serialize SPEC and sign it. RET_SPEC is malloc'd. Validates the
 * spec against the limits first (-EMSGSIZE, -EBADMSG). */
int link_task_sign(const LinkIdentity *pool, const Hlink__TaskSpec *spec,
                   void **ret_spec, size_t *ret_spec_len, uint8_t ret_sig[LINK_SIG_BYTES]);

/* Worker side: check TASK's signature against the pinned POOL_PK before
 * parsing anything in it, then decode and check the spec. RET_SPEC is freed
 * with hlink__task_spec__free_unpacked(spec, NULL); RET_SPEC_SHA256
 * (optional) gets the hash of the signed bytes, to put in the result. */
int link_task_verify(const Hlink__Task *task, const uint8_t pool_pk[LINK_KEY_BYTES],
                     Hlink__TaskSpec **ret_spec, uint8_t *ret_spec_sha256);

/* Worker side: serialize and sign BODY. Fills each output's sha256 from its
 * data when empty. The buffer is malloc'd. */
int link_result_sign(const LinkIdentity *worker, Hlink__ResultBody *body,
                     void **ret_body, size_t *ret_body_len, uint8_t ret_sig[LINK_SIG_BYTES]);
/* link_result_sign() without the signature: for results a batch signature
 * will cover (link_result_batch_sign()). */
int link_result_pack(Hlink__ResultBody *body, void **ret_body, size_t *ret_body_len);

/* Pool side: check RESULT's signature against WORKER_PK, decode the body,
 * check its limits and that every output's sha256 matches its data.
 * RET_HASH (optional) gets the result hash that replicas must agree on:
 * SHA-256 over status, exit code and the outputs' names and hashes. */
int link_result_verify(const Hlink__Result *result, const uint8_t worker_pk[LINK_KEY_BYTES],
                       Hlink__ResultBody **ret_body, uint8_t *ret_hash);

/* Batch signatures (Result.batch_signature): one signature over every
 * body of a Result, in order: "hlink-results-v1" || u8 n || SHA-256 of
 * each body. One signature made and one checked for up to
 * LINK_RESULTS_MAX results. */
#define LINK_PROOF_MAX (LINK_SIG_BYTES + 1 + LINK_RESULTS_MAX * LINK_HASH_BYTES)
int link_result_batch_sign(const LinkIdentity *worker, const ProtobufCBinaryData *bodies, size_t n,
                           uint8_t ret_sig[LINK_SIG_BYTES]);
/* Pool side: 0 if RESULT has no batch signature; 1 if its batch signature
 * verifies against WORKER_PK: then RET_PROOF (LINK_PROOF_MAX bytes) gets
 * what to keep with each of its results in place of the result's own
 * signature (the batch signature, n, the bodies' hashes) and
 * *RET_PROOF_LEN its length; -EKEYREJECTED if it does not verify. */
int link_result_batch_verify(const Hlink__Result *result, const uint8_t worker_pk[LINK_KEY_BYTES],
                             uint8_t *ret_proof, size_t *ret_proof_len);
/* link_result_verify() less the signature check: for a body that a batch
 * signature, verified, covers. */
int link_result_parse(const ProtobufCBinaryData *body, Hlink__ResultBody **ret_body, uint8_t *ret_hash);
/* Audit: whether PROOF, what the pool kept with a result (the result's own
 * signature, or a batch proof from link_result_batch_verify()), shows that
 * BODY came from WORKER_PK. 0, or -EKEYREJECTED. */
int link_result_proof_check(const uint8_t worker_pk[LINK_KEY_BYTES], const void *body, size_t body_len,
                            const void *proof, size_t proof_len);

/* Check a string: valid UTF-8, at most MAX bytes (0: no limit). */
bool link_utf8_ok(const char *s, size_t max);
/* An id: 1..LINK_ID_MAX bytes of [A-Za-z0-9._:-]. */
bool link_id_ok(const char *s);

/* Short name of an ErrorCode for logs ("malformed", "replay", ...). */
const char *link_error_name(int code);
/* The ErrorCode that answers a -errno from the decoder. */
int link_error_from_errno(int err);
/* The -errno a blocking client call returns for an Error reply's CODE:
 * ERR_UNKNOWN_WORKER -ENOTCONN (say hello again), ERR_UNKNOWN_TASK -ENOENT,
 * ERR_LEASE_EXPIRED -ETIMEDOUT, ERR_REPLAY -ESTALE, ERR_BAD_SIGNATURE
 * -EKEYREJECTED, ERR_TOO_LARGE -EMSGSIZE, ERR_MALFORMED -EBADMSG,
 * ERR_VERSION -EPROTONOSUPPORT, anything else -EPROTO. */
int link_errno_from_error(int code);
/* The -errno for an NNG error number (NNG_ETIMEDOUT -> -ETIMEDOUT, ...). */
int link_nng_errno(int nng_err);

/* --- The worker's client ---------------------------------------------------
 *
 * One REQ socket dialled to the pool, one request in flight at a time. The
 * asynchronous form fits sd-event: register link_client_fd() (an eventfd,
 * readable when a reply or a failure is waiting) as an EPOLLIN source and
 * call link_client_dispatch() from it; the callback then runs on the event
 * loop's thread, never on NNG's. The blocking calls are the same path with
 * a poll() in between, for tools and tests.
 *
 * A hello carries a fresh X25519 key (filled in here, whatever the caller's
 * Hello says); the Welcome sets up the session, and every later request goes
 * out MACed in it. Without a session requests go out signed (the pool
 * answers them ERR_UNKNOWN_WORKER: say hello); an ERR_UNKNOWN_WORKER reply
 * drops the session.
 *
 * Every reply is checked: link_decode(), sender equal to the pinned pool key
 * (signed) or the MAC under the session, reply_to equal to the request's
 * nonce, sequence above the last one seen. A
 * reply that fails is reported as that -errno and never handed out. NNG's own
 * request resend is off: a retried request is a new message with a new
 * sequence number, so the pool's replay guard never rejects a retry. */

typedef struct LinkClient LinkClient;

typedef struct LinkClientConfig {
        const char *url;                /* tcp://, ipc://, tls+tcp:// */
        const char *state_dir;          /* holds link-identity.key */
        uint8_t pool_key[LINK_KEY_BYTES];  /* pinned: [Pool] Key= */
        const char *tls_ca_file;        /* tls+tcp: CA bundle or the pinned certificate (PEM) */
        const char *tls_server_name;    /* tls+tcp: name to check; NULL: the URL's host */
        uint32_t timeout_ms;            /* per request; 0: 10 s */
} LinkClientConfig;

/* Called with ERROR 0 and the verified REPLY (owned by the callee: free it
 * with link_msg_free()), or with -errno and NULL: -ETIMEDOUT, -ECONNREFUSED,
 * or a decoder error. An Error body is delivered as a reply. */
typedef void (*LinkReplyFn)(LinkClient *c, int error, LinkMsg *reply, void *userdata);

/* Load or create the worker identity, open the socket and dial (in the
 * background: a pool that is down is not an error here). */
int link_client_new(const LinkClientConfig *cfg, LinkClient **ret);
void link_client_free(LinkClient *c);
/* The worker's public key (the pool's name for it). */
const uint8_t *link_client_key(const LinkClient *c);

/* An eventfd, readable while a completion waits for link_client_dispatch(). */
int link_client_fd(const LinkClient *c);
/* Send REQ; FN runs from link_client_dispatch() when it completes. -EBUSY
 * while another request is in flight. */
int link_client_submit(LinkClient *c, const Hlink__Body *req, LinkReplyFn fn, void *userdata);
/* Run the waiting callback, if any. Returns 1 if one ran, 0 if none. */
int link_client_dispatch(LinkClient *c);

/* Blocking: send REQ and wait for its verified reply. An Error body is
 * returned as -EPROTO with *RET_ERROR_CODE (optional) set to its code. */
int link_client_call(LinkClient *c, const Hlink__Body *req, LinkMsg **ret, int *ret_error_code);

/* Blocking conveniences over link_client_call(). An Error reply comes back
 * as link_errno_from_error() of its code; a reply of the wrong type as
 * -EPROTO. */
int link_client_hello(LinkClient *c, const Hlink__Capabilities *caps, const char *agent,
                      uint32_t *ret_lease_sec);

/* One verified task, as link_client_fetch() hands it out. */
typedef struct LinkTask {
        Hlink__TaskSpec *spec;          /* decoded from the signed bytes; its
                                         * argv has n_argv entries and no NULL
                                         * at the end (protobuf-c) */
        uint8_t spec_sha256[LINK_HASH_BYTES];
        uint64_t lease_expires_usec;
} LinkTask;

/* Fetch up to MAX tasks. Returns how many verified tasks are in *RET (free
 * with link_tasks_free()); RET_FORGED (optional) counts tasks dropped because
 * their signature did not verify against the pinned key, for the caller to
 * log and report. */
int link_client_fetch(LinkClient *c, unsigned max, LinkTask **ret, unsigned *ret_forged);
void link_tasks_free(LinkTask *t, size_t n);

/* Renew the leases of N tasks; RET_VALID[i] (optional, N entries) says whether
 * the pool still wants task i. */
int link_client_renew(LinkClient *c, const char *const *task_ids, size_t n, bool *ret_valid);

/* For the asynchronous path: sign BODY with the client's identity, as
 * link_result_sign() does, to put in a Result for link_client_submit(). */
int link_client_sign_result(LinkClient *c, Hlink__ResultBody *body, void **ret_body, size_t *ret_body_len,
                            uint8_t ret_sig[LINK_SIG_BYTES]);
/* And a batch signature over several results' bodies (Result.batch_signature),
 * each of which must carry a valid signature of ours in SIGS (else
 * -EKEYREJECTED: a body changed since it was signed). */
int link_client_sign_batch(LinkClient *c, const ProtobufCBinaryData *bodies, const ProtobufCBinaryData *sigs,
                           size_t n, uint8_t ret_sig[LINK_SIG_BYTES]);

/* Sign and send a result; *RET_ACCEPTED says whether the pool stored it
 * (false: it was not wanted any more, and may be forgotten). */
int link_client_send_result(LinkClient *c, Hlink__ResultBody *body, bool *ret_accepted);

/* The same, asking in the same request for up to MAX new tasks (one round
 * trip instead of two): returns how many verified tasks are in *RET, as
 * link_client_fetch() does. */
int link_client_send_result_fetch(LinkClient *c, Hlink__ResultBody *body, unsigned max, bool *ret_accepted,
                                  LinkTask **ret, unsigned *ret_forged);

/* Whether the client holds a session with the pool (it said hello and was
 * welcomed, and the pool has not said since that it forgot us). */
bool link_client_has_session(const LinkClient *c);

/* Tell the pool this worker leaves: its leases are handed out again. */
int link_client_goodbye(LinkClient *c, const char *reason);
