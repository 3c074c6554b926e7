/* Identifiers: random (version 4) UUIDs in their canonical text form. */
#ifndef LAB_CORE_ID_H
#define LAB_CORE_ID_H

#include <stdbool.h>

#define LAB_UUID_LEN 36

/* Writes 36 characters and a NUL. */
void lab_uuid4(char out[LAB_UUID_LEN + 1]);
/* Canonical 8-4-4-4-12 hexadecimal form (either case). */
bool lab_uuid_valid(const char *s);

#endif
