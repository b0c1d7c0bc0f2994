/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "net/link.h"
#include "net/relay.h"

int link_listen(nng_socket sock, const char *url, nng_tls_config *tls)
{
        nng_listener l;
        int rv = nng_listener_create(&l, sock, url);
        if (rv == 0 && tls)
                rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls);
        if (rv == 0)
                rv = nng_listener_start(l, 0);
        return link_nng_errno(rv);
}

int link_server_tls(const char *cert_key_file, nng_tls_config **ret)
{
        nng_tls_config *t;
        int rv;
        if (!cert_key_file)
                return -EINVAL;
        if ((rv = nng_tls_config_alloc(&t, NNG_TLS_MODE_SERVER)) != 0)
                return link_nng_errno(rv);
        if ((rv = nng_tls_config_cert_key_file(t, cert_key_file, NULL)) != 0) {
                nng_tls_config_free(t);
                return link_nng_errno(rv);
        }
        *ret = t;
        return 0;
}

int link_relay(const char *upstream, const char *listen, const char *tls_cert_key_file, const char *tls_ca_file)
{
        nng_socket front, back;
        nng_dialer d;
        nng_tls_config *ftls = NULL, *btls = NULL;
        int rv, r;

        /* Raw sockets: the relay keeps NNG's request routing headers and
         * passes bodies through untouched, so the end-to-end signatures
         * and the workers' sequence numbers arrive as they were sent. */
        if ((rv = nng_rep0_open_raw(&front)) != 0)
                return link_nng_errno(rv);
        if ((rv = nng_req0_open_raw(&back)) != 0) {
                nng_close(front);
                return link_nng_errno(rv);
        }
        nng_socket_set_size(front, NNG_OPT_RECVMAXSZ, 2 * LINK_MSG_MAX_BYTES);
        nng_socket_set_size(back, NNG_OPT_RECVMAXSZ, 2 * LINK_MSG_MAX_BYTES);
        r = 0;
        if (!strncmp(listen, "tls+", 4))
                r = link_server_tls(tls_cert_key_file, &ftls);
        if (r >= 0)
                r = link_listen(front, listen, ftls);
        if (r >= 0 && (rv = nng_dialer_create(&d, back, upstream)) != 0)
                r = link_nng_errno(rv);
        if (r >= 0 && !strncmp(upstream, "tls+", 4)) {
                if (!tls_ca_file)
                        r = -EINVAL;
                else if ((rv = nng_tls_config_alloc(&btls, NNG_TLS_MODE_CLIENT)) != 0 ||
                         (rv = nng_tls_config_auth_mode(btls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
                         (rv = nng_tls_config_ca_file(btls, tls_ca_file)) != 0 ||
                         (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, btls)) != 0)
                        r = link_nng_errno(rv);
        }
        if (r >= 0 && (rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0)
                r = link_nng_errno(rv);
        if (r >= 0)
                r = link_nng_errno(nng_device(front, back));
        nng_close(front);
        nng_close(back);
        if (ftls)
                nng_tls_config_free(ftls);
        if (btls)
                nng_tls_config_free(btls);
        return r;
}
