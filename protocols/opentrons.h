/* The Opentrons robot-server HTTP API (OT-2 and Flex), the subset labloop drives: GET /health,
 * POST /runs (a run without a protocol), and POST /runs/{id}/commands with
 * waitUntilComplete=true, one protocol-engine command at a time (home, loadPipette,
 * loadLabware, pickUpTip, aspirate, dispense, moveToAddressableAreaForDropTip,
 * dropTipInPlace, moveLabware). Owns the request targets and bodies and the reading of the
 * answers: the health document, a run, a command with its status and error occurrence, and the
 * server's error body. No I/O; HTTP framing is protocols/httpmsg.h.
 *
 * Sources (facts only), Opentrons/opentrons at df01e7722af56dbb6c1b2d1bf8a4f3edc82399ef:
 *   robot-server/robot_server/versioning.py:8-91 (Opentrons-Version: required on requests, the
 *       server answers in min(its version, the one asked), 4 is the version of this schema)
 *   robot-server/robot_server/runs/router/commands_router.py:110-246 (POST /runs/{runId}/commands,
 *       201 with the command; waitUntilComplete, timeout in ms; 404 RunNotFound, 409 RunStopped,
 *       400 CommandNotAllowed; intent defaults to setup)
 *   robot-server/robot_server/errors/error_responses.py:54-110 (errors[]: id, title, detail,
 *       errorCode)
 *   api/src/opentrons/protocol_engine/errors/error_occurrence.py:23-41 (a command's error:
 *       errorType, errorCode, detail)
 *   api/src/opentrons/protocol_engine/commands/{pick_up_tip,aspirate,dispense,drop_tip_in_place,
 *       move_to_addressable_area_for_drop_tip,load_pipette,load_labware,move_labware,home}.py
 *   robot-server/tests/integration/fixtures.py:15-42 (the health document),
 *   robot-server/tests/integration/http_api/commands/test_home.tavern.yaml (a run, home)
 *   robot-server/tests/integration/http_api/runs/test_json_v6_run_failure.tavern.yaml:104-126
 *       (a failed aspirate: TipNotAttachedError, errorCode 3005) */
#ifndef LAB_PROTO_OPENTRONS_H
#define LAB_PROTO_OPENTRONS_H

#include "protocols/proto.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define OT_DEFAULT_PORT 31950
#define OT_VERSION_FIELD "Opentrons-Version"
/* The HTTP API version this codec reads (versioning.py API_VERSION); a newer server answers in
 * it, an older one (2, 3) in its own, whose run and command documents are the same. */
#define OT_API_VERSION "4"
#define OT_ID_MAX 64    /* run, command, pipette and labware ids */
#define OT_TEXT_MAX 256 /* texts kept from an answer */

typedef enum ot_model {
    OT_MODEL_UNKNOWN = 0,
    OT_MODEL_OT2,  /* "OT-2 Standard" */
    OT_MODEL_FLEX, /* "OT-3 Standard" */
} ot_model_t;

typedef struct ot_health {
    char name[OT_ID_MAX + 1];
    char api_version[32];
    char fw_version[64];
    char robot_model[32];
    char robot_serial[64];
    char system_version[32];
    ot_model_t model;
} ot_health_t;

typedef enum ot_cmd_status {
    OT_CMD_QUEUED = 0,
    OT_CMD_RUNNING,
    OT_CMD_SUCCEEDED,
    OT_CMD_FAILED,
} ot_cmd_status_t;

typedef struct ot_command {
    char id[OT_ID_MAX + 1];
    char command_type[64];
    ot_cmd_status_t status;
    char error_type[64]; /* failed: the error occurrence's errorType */
    char error_code[16]; /* its errorCode ("3005") */
    char detail[OT_TEXT_MAX];
    char result_id[OT_ID_MAX + 1]; /* result.pipetteId or result.labwareId, when given */
} ot_command_t;

typedef struct ot_run {
    char id[OT_ID_MAX + 1];
    char status[32];
    bool current;
} ot_run_t;

/* The server's error body of a 4xx/5xx answer. */
typedef struct ot_error {
    char id[64]; /* "RunNotFound", "RunStopped", ... */
    char error_code[16];
    char detail[OT_TEXT_MAX];
} ot_error_t;

/* An id the server gave (run, command, pipette, labware): 1 to OT_ID_MAX bytes of letters,
 * digits, '-' and '_', so it can go into a request target as it is. */
bool ot_id_ok(const char *id);
/* "/runs/ID/commands?waitUntilComplete=true&timeout=MS": length, or LAB_EINVAL (a bad id,
 * timeout_ms < 1) or LAB_ENOSPACE. */
int ot_command_target(char *buf, size_t cap, const char *run_id, long timeout_ms);
/* {"data":{"commandType":TYPE,"params":PARAMS,"intent":"setup"}} (params borrowed; NULL: {}):
 * malloc'd text, or NULL for a type that is not a command name. */
char *ot_command_body(const char *type, json_t *params);
/* {"data":{}}: the body of POST /runs. */
const char *ot_run_body(void);

/* Readers: LAB_OK, or LAB_ESYNTAX (not JSON, not the document) / LAB_EUNKNOWN (a value this
 * codec does not know: robot model, command status) with why filled. */
int ot_health_parse(const char *body, size_t len, ot_health_t *h, char *why, size_t cap);
int ot_run_parse(const char *body, size_t len, ot_run_t *r, char *why, size_t cap);
int ot_command_parse(const char *body, size_t len, ot_command_t *c, char *why, size_t cap);
int ot_error_parse(const char *body, size_t len, ot_error_t *e, char *why, size_t cap);
/* A command request as a server reads it: the type (copied) and params (a new reference, an
 * object). LAB_OK or LAB_ESYNTAX with why. */
int ot_command_request_parse(const char *body, size_t len, char *type, size_t type_cap,
                             json_t **params, char *why, size_t cap);
const char *ot_cmd_status_name(ot_cmd_status_t s);
/* The robot_model value of a model ("OT-2 Standard"), NULL for unknown. */
const char *ot_model_name(ot_model_t m);

#endif
