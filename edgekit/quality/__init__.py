"""Quality: how good and how fast a model variant is, judged with statistics that survive noise."""
