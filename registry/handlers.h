/* handlers.h - what tpshare's built-in handlers (registry/handlers_*.c)
 * are built on: the public C API, as a third-party extension sees it.
 *
 * The handlers share and rebuild nested items, ask whether a copy is
 * needed, take small payload memory and register their types only
 * through the members of the function table tpshare exports
 * (TpShare_CAPI, src/capi.h), so that they prove that table sufficient.
 * They include no header of the records or of the owner side.  What
 * they still take from registry.h has no public counterpart: the
 * fallback registrations chosen by the caller or by a protocol rather
 * than by type (the pickle and buffer-export entries, made as entries of
 * their own), the hook that makes a buffer export's view object (a
 * tpshare type), and the size from which bytes are shared rather than
 * copied.
 */
#ifndef TPSHARE_HANDLERS_H
#define TPSHARE_HANDLERS_H

#ifndef TPSHARE_BUILD_CORE
#error "handlers.h is internal to tpshare"
#endif

#include "capi.h"
#include "registry.h"

/* The handlers' view of the C API table: a constant copy of the
 * exported one, made from the same initializer (capi.h says why). */
static const TpShare_CAPI tps_handlers_api = TPS_CAPI_INIT;

#endif /* TPSHARE_HANDLERS_H */
