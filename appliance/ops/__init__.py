"""Running the appliance: program lifecycle, logging, the bus logger, development set-up."""
