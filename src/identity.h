/* identity.h - identity of objects sent more than once through a
 * channel with identity on (identity.c).
 */
#ifndef TPSHARE_IDENTITY_H
#define TPSHARE_IDENTITY_H

#ifndef TPSHARE_BUILD_CORE
#error "identity.h is internal to tpshare"
#endif

#include "common.h"
#include "record.h"

typedef struct tps_identity tps_identity;
tps_identity *tps_identity_new(void);
/* Drop every reference (with the GIL of the interpreter it belongs to). */
void tps_identity_free(tps_identity *id);
/* Sender: tag `rec` (TPS_REC_IMMUTABLE, at any depth of a message, not
 * yet tagged) with the serial of `obj` (borrowed; kept alive by the
 * sender's bounded ring), unless obj is too big to track or rebuilds as
 * itself anyway.  0 or -1 with MemoryError.  With the GIL. */
int tps_identity_tag(tps_identity *id, TpShare_Record *rec, PyObject *obj);
/* Receiver: the object already rebuilt here for rec's serial (new
 * reference), or NULL without an exception. */
PyObject *tps_identity_lookup(tps_identity *id, TpShare_Record *rec);
/* Receiver: remember `obj` (borrowed) as the rebuild of rec (tagged); a
 * no-op when the tables are full of objects the receiver still holds. */
void tps_identity_remember(tps_identity *id, TpShare_Record *rec,
                           PyObject *obj);
/* The sender's id() of a received object, or -1 if unknown. */
Py_ssize_t tps_identity_origin(tps_identity *id, PyObject *obj);

#endif /* TPSHARE_IDENTITY_H */
