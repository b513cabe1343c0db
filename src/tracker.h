/* tracker.h - release trackers (tracker.c): told when a record is
 * freed, waited on by MemChannel.send's caller.
 */
#ifndef TPSHARE_TRACKER_H
#define TPSHARE_TRACKER_H

#ifndef TPSHARE_BUILD_CORE
#error "tracker.h is internal to tpshare"
#endif

#include "common.h"
#include "module_state.h"
#include "owner.h"

typedef struct tps_tracker tps_tracker;

/* A tracker for records shared by the current interpreter (one
 * reference), or NULL with MemoryError. */
tps_tracker *tps_tracker_new(tps_interp *st);
void tps_tracker_incref(tps_tracker *t);
void tps_tracker_decref(tps_tracker *t);
/* Mark released and wake the owner's parked threads; any thread. */
void tps_tracker_fire(tps_tracker *t);
/* A new Python Tracker (new reference) holding `t` (borrowed). */
PyObject *tps_tracker_wrap(tps_module_state *state, tps_tracker *t);
int tps_tracker_init_type(PyObject *module, tps_module_state *state);

#endif /* TPSHARE_TRACKER_H */
