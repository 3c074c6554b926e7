/* The drivers labloopd ships: adding a driver is adding a row. */
#include "drivers/driver.h"

#include <string.h>

extern const lab_driver_ops_t lab_driver_biotek_synergy;
extern const lab_driver_ops_t lab_driver_hamilton_star;
extern const lab_driver_ops_t lab_driver_liconic_stx;
extern const lab_driver_ops_t lab_driver_manual_mover;
extern const lab_driver_ops_t lab_driver_mqtt_report;
extern const lab_driver_ops_t lab_driver_modbus_temperature;
extern const lab_driver_ops_t lab_driver_spectramax;
extern const lab_driver_ops_t lab_driver_keyence_sr;
extern const lab_driver_ops_t lab_driver_thermo_cytomat;
extern const lab_driver_ops_t lab_driver_opentrons;

/* One driver per line, so adding one is adding a line. */
// clang-format off
const lab_driver_ops_t *const lab_drivers[] = {
    &lab_driver_liconic_stx,
    &lab_driver_biotek_synergy,
    &lab_driver_hamilton_star,
    &lab_driver_manual_mover,
    &lab_driver_mqtt_report,
    &lab_driver_modbus_temperature,
    &lab_driver_spectramax, /* Molecular Devices SpectraMax */
    &lab_driver_keyence_sr,
    &lab_driver_thermo_cytomat,
    &lab_driver_opentrons,
    NULL,
};
// clang-format on
