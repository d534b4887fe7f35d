"""The ward's read views: the patient list, the ward's counts, a stay's page, the alarm queue."""
