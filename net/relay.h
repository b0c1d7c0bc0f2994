/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Listening helpers shared by the pool server and the relay, and the relay
 * itself: the one piece of the link that both harvest-pool (a site relay)
 * and harvester-link (the node's unprivileged network half) run.
 */
#pragma once

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

/* Listen on URL (tcp://, ipc://, tls+tcp:// with TLS set). */
int link_listen(nng_socket sock, const char *url, nng_tls_config *tls);

/* A server-side TLS configuration from a PEM file holding the certificate
 * and its key. -EINVAL without a file. */
int link_server_tls(const char *cert_key_file, nng_tls_config **ret);

/* Forward every request from peers dialling LISTEN to UPSTREAM and the
 * replies back, unchanged (signatures are end to end, so a relay can
 * neither forge work nor results). TLS_CERT_KEY_FILE: for a tls+tcp://
 * LISTEN; TLS_CA_FILE: required for a tls+tcp:// UPSTREAM. Blocks until an
 * error or the sockets close. */
int link_relay(const char *upstream, const char *listen, const char *tls_cert_key_file, const char *tls_ca_file);
