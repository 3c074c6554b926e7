/* GET /v1/prompts: what waits for a person now (a paused run, an instrument in fault, a manual
 * move), newest first, as the store keeps them; the "prompt" events tell of each change. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "daemon/store/prompts.h"

void lab_api_prompts_list(lab_req_t *rq)
{
    json_t *arr = NULL;
    int rc = lab_prompts_open(rq->api->store, &arr);
    if (rc) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "listing prompts failed: %s", lab_strerror(rc));
        return;
    }
    lab_respond_json(rq, 200, json_pack("{s:o}", "prompts", arr));
}
